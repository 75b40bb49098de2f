"""Simulators: device fleet, scripted scenarios, synthetic street, fake providers."""
