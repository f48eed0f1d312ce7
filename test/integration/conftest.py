import pytest
from rosutil import Probe, isolated_domain


@pytest.fixture
def domain():
    with isolated_domain() as d:
        yield d


@pytest.fixture
def probe(domain):
    p = Probe(domain)
    yield p
    p.close()
