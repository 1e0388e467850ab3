"""Built-in job types. Importing a module registers its types in the process registry."""
