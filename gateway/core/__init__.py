"""The TR50 protocol core: no network library, no database (see the README's Layout)."""
