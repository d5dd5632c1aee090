"""Interactive layer (ipywidgets): the reward playground, the inference demo, offline retrieval."""
