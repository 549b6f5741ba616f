"""Chat templates: turn a list of messages into the prompt text a model was trained on."""
