def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts the real gateway in-process (a few seconds)")
