"""Fake Aliyun SMS and WeCom servers speaking the providers' real HTTP APIs."""
