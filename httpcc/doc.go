// Package httpcc implements HTTP conditional requests for writes: optimistic
// concurrency control over HTTP with ETag, If-Match, If-None-Match,
// If-Unmodified-Since, 412 Precondition Failed, 428 Precondition Required and
// 423 Locked, on plain net/http.
//
// Go's standard library evaluates preconditions only inside
// [net/http.ServeContent], which serves reads. A handler that updates a
// resource has to evaluate If-Match itself; this package does it, in the order
// RFC 9110 §13.2.2 fixes, and writes the error responses.
//
// # The pattern
//
// A client reads a resource and receives its [ETag] (derived from a version
// number). It sends the ETag back in If-Match with its save. The handler:
//
//  1. reads the current version of the resource;
//  2. calls [Check] with the current [State]; a non-nil error is written with
//     [WriteError] (412 with the current ETag, 304, or 400 for a malformed
//     header);
//  3. saves with a versioned write that succeeds only if the version is still
//     the one read in step 1 (UPDATE … SET version = version+1 WHERE id = ? AND
//     version = ?, or a compare-and-swap under a mutex), and answers 412 if
//     that write finds the version changed.
//
// Step 3 is not optional. [Check] compares headers with a state the handler
// read a moment earlier; another request can save between that read and this
// request's write. The header check alone is a check-then-act race; it is the
// atomic, versioned write that prevents the lost update, and the header check
// that tells the client which version it lost against. The package example
// shows the whole pattern.
//
// [RequirePrecondition] (or a [Policy]) answers 428 Precondition Required to a
// PUT, PATCH or DELETE that carries no precondition, so a client cannot skip
// the check by leaving the header out. Last-write-wins is then a choice a
// handler makes explicitly, by not installing the middleware.
//
// # Validators
//
// [ETag] returns a strong entity-tag such as "v42" for a version and
// [ParseVersion] reads it back. If-Match uses the strong comparison: a weak
// tag (W/"v42") never matches. If-None-Match uses the weak comparison.
// "If-None-Match: *" makes a PUT create-if-absent.
//
// If-Unmodified-Since with Last-Modified serves the updated-at style of
// optimistic control. HTTP dates have one-second granularity: two writes within
// the same second produce the same Last-Modified, so a client holding the
// first one's date can overwrite the second one's data undetected. A deleted
// resource has no Last-Modified either, and RFC 9110 requires the condition to
// be ignored then, unless the handler reports the deletion time in
// [State].LastModified. A store can close the first gap by giving every
// version its own second (haita serve records a save in the same second as
// the previous version at the next second). The write itself must be
// conditional on the date, like a versioned write: UPDATE … WHERE id = ? AND
// updated_at < (the date + 1s). Prefer ETags from a version counter; use
// dates only where clients cannot send an ETag.
//
// # Reads and 304
//
// [CheckRead] serves the read side: it sets ETag and Last-Modified, evaluates
// the preconditions and writes a 304 (or 412) itself. A 304 keeps the fields
// the handler set for the 200 (Cache-Control, Content-Location, Expires,
// Vary), as RFC 9110 §15.4.5 requires, so set them before calling it.
//
// # Where this package departs from the letter of RFC 9110
//
//   - A malformed or empty If-Match or If-None-Match is rejected with 400.
//     (If-Unmodified-Since and If-Modified-Since that are not one valid
//     HTTP-date are ignored, as §13.1.3 and §13.1.4 say; [Policy] does not
//     count such an If-Unmodified-Since as a precondition, so a write that
//     must be conditional gets 428 instead of running unguarded.)
//   - The §13.2.2 allowance to answer 2xx when a failed If-Match request's
//     change "has already succeeded" is left to the handler.
//   - If-Range is not evaluated; [net/http.ServeContent] handles ranges.
//
// Per §13.2.1, a server must ignore preconditions when the request would fail
// without them with a status other than 2xx or 412: call [Check] after
// authentication, authorisation and request validation.
//
// All functions and types in this package are safe for concurrent use; the
// error types are plain values that are safe to share once built.
package httpcc
