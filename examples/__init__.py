"""Examples of extending the harness: rules of one's own (``optimizer=rule``)."""
