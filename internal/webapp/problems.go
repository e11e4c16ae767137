package webapp

import (
	"encoding/json"
	"net/http"
	"slices"
)

// problemType names one kind of error of the API. Its type URI
// (RFC 9457 §3.1.1) is /api/problems/ followed by the name: stable, so a
// client tells the kinds apart by it (the 409s of a checkout broken,
// expired or not held, say) without parsing the detail text. GET on the URI
// returns its description; /api/openapi.json lists them all.
type problemType string

// The problem types of the API.
const (
	ptBadRequest           problemType = "bad-request"
	ptMalformedHeader      problemType = "malformed-header"
	ptUnauthorized         problemType = "unauthorized"
	ptForbidden            problemType = "forbidden"
	ptCrossOrigin          problemType = "cross-origin"
	ptCSRF                 problemType = "csrf"
	ptNotFound             problemType = "not-found"
	ptNoEndpoint           problemType = "no-endpoint"
	ptNotCheckedOut        problemType = "not-checked-out"
	ptMethodNotAllowed     problemType = "method-not-allowed"
	ptNotPessimistic       problemType = "not-pessimistic"
	ptCheckoutBroken       problemType = "checkout-broken"
	ptCheckoutExpired      problemType = "checkout-expired"
	ptCheckoutNotHeld      problemType = "checkout-not-held"
	ptPreconditionFailed   problemType = "precondition-failed"
	ptAlreadyExists        problemType = "already-exists"
	ptTooLarge             problemType = "too-large"
	ptUnsupportedMedia     problemType = "unsupported-media-type"
	ptInvalid              problemType = "invalid"
	ptLocked               problemType = "locked"
	ptPreconditionRequired problemType = "precondition-required"
	ptCheckoutRequired     problemType = "checkout-required"
	ptInternal             problemType = "internal"
)

// problemDoc describes a problem type: its status and what it means.
type problemDoc struct {
	Type        string `json:"type"`
	Title       string `json:"title"`
	Status      int    `json:"status"`
	Description string `json:"description"`
}

// problemDocs are the descriptions of the problem types, served at their
// URIs.
var problemDocs = map[problemType]problemDoc{
	ptBadRequest:           {Status: 400, Description: "The request body is not valid JSON of the expected shape, or a required header is missing."},
	ptMalformedHeader:      {Status: 400, Description: "If-Match or If-None-Match is not a valid entity-tag list; the member `header` names it."},
	ptUnauthorized:         {Status: 401, Description: "No valid API token or session."},
	ptForbidden:            {Status: 403, Description: "The user may not do this (breaking a checkout needs an administrator)."},
	ptCrossOrigin:          {Status: 403, Description: "A state-changing request from another origin was refused."},
	ptCSRF:                 {Status: 403, Description: "A session request that changes state lacks the session's X-CSRF-Token."},
	ptNotFound:             {Status: 404, Description: "No document with this id."},
	ptNoEndpoint:           {Status: 404, Description: "No API endpoint at this path."},
	ptNotCheckedOut:        {Status: 404, Description: "The document has no live checkout."},
	ptMethodNotAllowed:     {Status: 405, Description: "The method is not supported at this path; the Allow header lists those that are."},
	ptNotPessimistic:       {Status: 409, Description: "Checkouts were requested on a document whose policy is not pessimistic."},
	ptCheckoutBroken:       {Status: 409, Description: "An administrator broke the caller's checkout: `broken_by`, `broken_at` and `reason` say who, when and why. Nothing was saved."},
	ptCheckoutExpired:      {Status: 409, Description: "The caller's checkout expired (no heartbeat, or its maximum age). Nothing was saved; check the document out again."},
	ptCheckoutNotHeld:      {Status: 409, Description: "The Checkout-Token holds no checkout of the document (released, or never issued). Nothing was saved."},
	ptPreconditionFailed:   {Status: 412, Description: "A precondition (If-Match, If-Unmodified-Since, If-None-Match) is false: the document changed since the client read it. The response carries the current ETag and Last-Modified; nothing was saved."},
	ptAlreadyExists:        {Status: 412, Description: "A create (If-None-Match: *) found a document with this id; the response carries its ETag."},
	ptTooLarge:             {Status: 413, Description: "The body is larger than 1 MiB."},
	ptUnsupportedMedia:     {Status: 415, Description: "The body is not application/json."},
	ptInvalid:              {Status: 422, Description: "A field has an invalid value (id, title, body or policy)."},
	ptLocked:               {Status: 423, Description: "Another user holds the document's checkout: `holder`, `since` and `until` say who and until when. Nothing was saved."},
	ptPreconditionRequired: {Status: 428, Description: "The write needs a precondition and carries none that counts: send If-Match with the ETag of your read (or a valid If-Unmodified-Since). `required` lists the fields, `ignored` those sent but ignored as invalid."},
	ptCheckoutRequired:     {Status: 428, Description: "The document is pessimistic: check it out and send the token in Checkout-Token."},
	ptInternal:             {Status: 500, Description: "The server failed; it logged why."},
}

// URI returns the problem type's type URI.
func (t problemType) URI() string { return "/api/problems/" + string(t) }

// problem writes an RFC 9457 problem document of type t, in the shape
// httpcc writes.
func problem(w http.ResponseWriter, t problemType, detail string, ext map[string]any) {
	status := problemDocs[t].Status
	p := map[string]any{"type": t.URI(), "title": http.StatusText(status), "status": status, "detail": detail}
	for k, v := range ext {
		p[k] = v
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

// handleProblemType serves the description of a problem type at its URI.
func (a *App) handleProblemType(w http.ResponseWriter, r *http.Request) {
	t := problemType(r.PathValue("type"))
	d, ok := problemDocs[t]
	if !ok {
		problem(w, ptNoEndpoint, "no such problem type", nil)
		return
	}
	d.Type, d.Title = t.URI(), http.StatusText(d.Status)
	w.Header().Set("Cache-Control", "public, max-age=86400")
	writeJSON(w, http.StatusOK, d)
}

// problemTypes returns the problem types, sorted.
func problemTypes() []problemType {
	ts := make([]problemType, 0, len(problemDocs))
	for t := range problemDocs {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return ts
}

// methodNotAllowed answers 405 with the methods path supports in Allow.
func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		problem(w, ptMethodNotAllowed, r.Method+" is not supported here; use "+allow, nil)
	}
}
