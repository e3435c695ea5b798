"""Security: caller authentication and realm authorisation, encryption of stored notes, token checks."""
