"""sslviz: semi-supervised learning under class imbalance."""
