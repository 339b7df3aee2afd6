// Package logattr holds the log/slog attributes colibri's packages share.
package logattr

import "log/slog"

// ErrorKey is the key an error is logged under.
const ErrorKey = "error"

// Err returns err as the attribute "error", or, for a nil err, the empty
// attribute, which handlers leave out (as zap.Error(nil) was).
func Err(err error) slog.Attr {
	if err == nil {
		return slog.Attr{}
	}
	return slog.Any(ErrorKey, err)
}
