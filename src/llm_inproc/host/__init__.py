"""What this machine and this installation offer."""
