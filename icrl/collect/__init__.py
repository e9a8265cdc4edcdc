"""Expert collection into a trajectory store (``icrl collect``), its recipes, and human play (``icrl play``)."""
