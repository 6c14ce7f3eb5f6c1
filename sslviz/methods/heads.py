"""Methods with a head of their own on the backbone's features, in pipeline order."""
HEAD_METHODS: tuple = ()
