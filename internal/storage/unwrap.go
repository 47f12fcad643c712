package storage

// Unwrap returns the store client under decorators (an encrypting
// agecrypt.Client), for code that needs the concrete store: a decorator
// has an Unwrap method that returns the client it wraps.
func Unwrap(c Client) Client {
	for {
		u, ok := c.(interface{ Unwrap() Client })
		if !ok {
			return c
		}
		c = u.Unwrap()
	}
}
