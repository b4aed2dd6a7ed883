"""Authentication at the edge: credentials, their stores, and the policies that check them."""
