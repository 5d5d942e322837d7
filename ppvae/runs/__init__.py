"""The run folder (``folder``: what ``ppvae fit`` writes and every other command reads back) and
atomic file writes (``atomic``: every result is written to a temporary file and renamed into place).
"""
