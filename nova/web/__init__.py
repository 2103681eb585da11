"""HTTP views: they parse requests and authorise; services change state."""
