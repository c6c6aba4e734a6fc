"""ember.backends: arrives with the compiler issues."""
