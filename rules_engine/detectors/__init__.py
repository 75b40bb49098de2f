"""Pure detectors: typed events and an injected clock in, decisions out."""
