"""Hardware access for the driver template: one small Device class a user replaces."""
