"""Generation in layers (mlx-lm style): the token loop (generate.py: Session, generate_tokens), the text stream
(stream.py: stream_text, Chunk) with its stop strings (stops.py: StopMatcher), and Model.generate joining the
text (edgellm/api.py); sampling.py and params.py serve them. Nothing is imported here, so that argument checks
(params.py) do not pull in the numba kernels."""
