"""Device gateways: protocols of devices sold in China, translated to carewatch's contract."""
