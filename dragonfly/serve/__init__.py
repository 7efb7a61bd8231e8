"""Serving the registered model: a chat-completions body through ``mlflow models serve``,
and DataFrame batches in process, with images read from the request only.

``errors`` (the 400 every refused request gets), ``images`` (data URLs, bytes, and paths
only under the operator's ``image_root``), ``chat`` (a chat-completions body to one
question and one image; the answer back in the chat-completion shape), ``pyfunc`` (the
MLflow model that the registry logs; README, "Serve the model").
"""
