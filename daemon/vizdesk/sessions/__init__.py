"""Desktop sessions: the record, its request, store, spawner, ACL users and tracking."""
