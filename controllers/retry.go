package controllers

import "time"

// RetryPolicy is how the controllers retry a Job whose transient failures
// used up its own backoffLimit: a fresh Job (a new name, so nothing of the
// old attempt is reused), after an exponentially growing delay, a bounded
// number of times. Permanent failures (bad input, refused arguments) are
// never retried: only the user can change what fails them, and the retry
// annotation asks for a fresh attempt when they have.
type RetryPolicy struct {
	// Limit is how many fresh Jobs follow the first one; 0: none.
	Limit int32
	// Base is the delay before the first retry; each next one doubles,
	// up to Max.
	Base, Max time.Duration
}

// DefaultRetryPolicy: 5 retries, 30 s doubling to 10 min (about 15
// minutes from the first failure to the last attempt).
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{Limit: 5, Base: 30 * time.Second, Max: 10 * time.Minute}
}

// Delay is how long to wait before retry number n (from 1).
func (p RetryPolicy) Delay(n int32) time.Duration {
	d := p.Base
	for i := int32(1); i < n && d < p.Max; i++ {
		d *= 2
	}
	return min(d, p.Max)
}

// Due says how long from now until retry n is due after a failure at
// failedAt (0 or less: now).
func (p RetryPolicy) Due(n int32, failedAt, now time.Time) time.Duration {
	return failedAt.Add(p.Delay(n)).Sub(now)
}
