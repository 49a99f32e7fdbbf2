"""The demo catalogue: a generated Django Packages catalogue at the real site's scale."""
