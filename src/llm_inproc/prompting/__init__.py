"""From messages to what the model reads: roles, prompt encodings, chat templates, requests."""
