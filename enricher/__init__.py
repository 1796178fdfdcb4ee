"""alert-enricher: turns a bare Prometheus alert into a page an on-call engineer can act on."""

__version__ = "0.1.0"
