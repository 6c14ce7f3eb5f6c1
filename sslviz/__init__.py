"""sslviz: semi-supervised learning under class imbalance."""

__version__ = "0.2.0"
