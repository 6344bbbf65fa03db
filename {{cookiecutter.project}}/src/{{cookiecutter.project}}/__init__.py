"""Session-based next-item recommendations on the post-modern stack."""
