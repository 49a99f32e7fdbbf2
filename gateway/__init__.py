"""A GraphQL gateway for Django Packages."""
