"""ember.passes: arrives with the compiler issues."""
