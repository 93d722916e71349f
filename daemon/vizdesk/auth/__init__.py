"""Authentication and authorisation: JWT verification, POSIX accounts, group policy."""
