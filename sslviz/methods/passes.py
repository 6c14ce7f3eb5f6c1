"""Methods that re-estimate from the model's predictions on the whole unlabeled set once a pass, in pipeline order."""
PASS_METHODS: tuple = ()
