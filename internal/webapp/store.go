package webapp

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/haita/haita/checkout"
	"github.com/haita/haita/httpcc"
	"github.com/haita/haita/sqlcc"
)

// The three editing policies a document can use.
const (
	LastWriteWins = "last-write-wins"
	Optimistic    = "optimistic"
	Pessimistic   = "pessimistic"
)

func validPolicy(p string) bool { return p == LastWriteWins || p == Optimistic || p == Pessimistic }

// Document is one stored document.
type Document struct {
	ID        string    `json:"id"`
	Title     string    `json:"title"`
	Body      string    `json:"body"`
	Policy    string    `json:"policy"`
	Version   int64     `json:"version"`
	UpdatedBy string    `json:"updated_by"`
	UpdatedAt time.Time `json:"updated_at"`
	stamp     int64
}

// ETag returns the document's entity-tag.
func (d Document) ETag() string { return httpcc.ETag(d.Version) }

// state is the document's validators for package httpcc, to evaluate
// preconditions with: its ETag and, as its modification date, UpdatedAt.
func (d Document) state() httpcc.State {
	return httpcc.State{ETag: d.ETag(), LastModified: d.UpdatedAt, Exists: true}
}

// sent is d's state as a response reports it: Last-Modified no later
// than now (see lastModified).
func (a *App) sent(d Document) httpcc.State {
	s := d.state()
	s.LastModified = a.lastModified(s.LastModified)
	return s
}

// lastModified returns the Last-Modified to send for a document last
// modified at t. Saves give every version its own second (see
// nextModified), which can put t a little ahead of the clock during a
// burst of saves; RFC 9110 §8.8.2.1 then has the response carry the
// current time instead. That date is earlier than t, so a client sending
// it back in If-Unmodified-Since gets 412 until it reads again: a refusal,
// never a lost update.
func (a *App) lastModified(t time.Time) time.Time {
	if now := a.now(); t.After(now) {
		return now
	}
	return t
}

// nextModified returns the modification time of a save at now of a
// version last modified at prev: now, or the second after prev's when the
// save falls in the same second (or the clock went back). HTTP dates have
// one-second granularity, so two versions with a Last-Modified in the same
// second could not be told apart by If-Unmodified-Since: a client holding
// the first one's date would overwrite the second one undetected.
func nextModified(prev, now time.Time) time.Time {
	if next := prev.Truncate(time.Second).Add(time.Second); now.Before(next) {
		return next
	}
	return now
}

// User is a signed-in user.
type User struct {
	Name    string `json:"name"`
	Display string `json:"display"`
	Admin   bool   `json:"admin"`
}

// Errors of the store, mapped to HTTP by the handlers.
var (
	errNotFound         = errors.New("webapp: no such document")
	errCheckoutRequired = errors.New("webapp: check the document out before saving it")
	errNotPessimistic   = errors.New("webapp: the document does not use checkouts")
	errInvalid          = errors.New("webapp: invalid input")
)

// conflictError reports an optimistic save that lost: Current is the
// document as it is now.
type conflictError struct{ Current Document }

func (e *conflictError) Error() string {
	return fmt.Sprintf("webapp: document %s changed: now version %d", e.Current.ID, e.Current.Version)
}

// checkoutError reports a save or heartbeat under a checkout that is no
// longer the caller's: expired, broken by someone, or released.
type checkoutError struct{ err error }

func (e *checkoutError) Error() string { return e.err.Error() }
func (e *checkoutError) Unwrap() error { return e.err }

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

func validID(id string) bool { return idRE.MatchString(id) }

const (
	maxTitle = 200
	maxBody  = 256 << 10
)

func validText(title, body string) error {
	switch {
	case len(title) == 0 || len(title) > maxTitle:
		return fmt.Errorf("%w: the title must have 1 to %d bytes", errInvalid, maxTitle)
	case len(body) > maxBody:
		return fmt.Errorf("%w: the body must have at most %d bytes", errInvalid, maxBody)
	}
	return nil
}

const docColumns = `id, title, body, policy, version, stamp, updated_by, updated_at`

func scanDoc(sc interface{ Scan(...any) error }) (Document, error) {
	var d Document
	var at int64
	if err := sc.Scan(&d.ID, &d.Title, &d.Body, &d.Policy, &d.Version, &d.stamp, &d.UpdatedBy, &at); err != nil {
		return Document{}, err
	}
	d.UpdatedAt = sinceMilli(at)
	return d, nil
}

func (a *App) getDoc(ctx context.Context, db sqlcc.DB, id string) (Document, error) {
	d, err := scanDoc(db.QueryRowContext(ctx, a.q(`SELECT `+docColumns+` FROM `+tDocs+` WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Document{}, errNotFound
	}
	if err != nil {
		return Document{}, fmt.Errorf("webapp: read document: %w", err)
	}
	return d, nil
}

func (a *App) listDocs(ctx context.Context) ([]Document, error) {
	rows, err := a.db.QueryContext(ctx, `SELECT `+docColumns+` FROM `+tDocs+` ORDER BY title, id`)
	if err != nil {
		return nil, fmt.Errorf("webapp: list documents: %w", err)
	}
	defer rows.Close()
	var docs []Document
	for rows.Next() {
		d, err := scanDoc(rows)
		if err != nil {
			return nil, fmt.Errorf("webapp: list documents: %w", err)
		}
		docs = append(docs, d)
	}
	return docs, rows.Err()
}

// createDoc inserts a new document at version 1. An existing id is a
// *conflictError carrying the existing document.
func (a *App) createDoc(ctx context.Context, user string, d Document) (Document, error) {
	if !validID(d.ID) {
		return Document{}, fmt.Errorf("%w: the id must be 1 to 64 of a-z, 0-9 and -, starting with a letter or digit", errInvalid)
	}
	if !validPolicy(d.Policy) {
		return Document{}, fmt.Errorf("%w: policy must be %s, %s or %s", errInvalid, LastWriteWins, Optimistic, Pessimistic)
	}
	if err := validText(d.Title, d.Body); err != nil {
		return Document{}, err
	}
	d.Version, d.UpdatedBy, d.UpdatedAt = 1, user, a.now().Truncate(time.Millisecond)
	_, err := a.db.ExecContext(ctx, a.q(`INSERT INTO `+tDocs+` (`+docColumns+`) VALUES (?, ?, ?, ?, 1, 0, ?, ?)`),
		d.ID, d.Title, d.Body, d.Policy, user, d.UpdatedAt.UnixMilli())
	if sqlcc.IsUniqueViolation(err) {
		cur, gerr := a.getDoc(ctx, a.db, d.ID)
		if gerr != nil {
			return Document{}, gerr
		}
		return Document{}, &conflictError{Current: cur}
	}
	if err != nil {
		return Document{}, fmt.Errorf("webapp: create document: %w", err)
	}
	a.changed()
	return d, nil
}

// saveInput is one save of a document.
type saveInput struct {
	Title, Body *string // nil keeps the stored value
	// Expect is the version the editor started from; 0 saves whatever the
	// version is (allowed for last-write-wins and under a checkout).
	Expect int64
	// Token is the checkout token; required for pessimistic documents.
	Token string
	// Cond, when set, evaluates the request's preconditions against the
	// document as locked by the save's transaction; an error aborts the
	// save and is returned as it is.
	Cond func(Document) error
	// Unmodified, when not zero, is the If-Unmodified-Since date the write
	// is conditional on: the UPDATE or DELETE matches the row only if it
	// was last changed before the end of that second.
	Unmodified time.Time
}

// saveDoc saves a document under its policy:
//
//   - last-write-wins: an unconditional update, unless Expect or Cond is set;
//   - optimistic: an update conditional on Expect or Cond (the caller
//     enforces that one is set), a *conflictError when the version moved;
//   - pessimistic: the update runs in the transaction that verifies the
//     caller's checkout (checkout.Manager.Save), so a save under an expired
//     or broken checkout, or under a token of another user's checkout,
//     changes nothing.
//
// In every case the document's row is locked in the transaction, Expect
// and Cond are evaluated against it, and the UPDATE is conditional on the
// version that was evaluated (and on Unmodified): the write happens only if
// the preconditions hold at the moment of the write. Every accepted save
// raises the version by exactly one.
func (a *App) saveDoc(ctx context.Context, user, id string, in saveInput) (Document, error) {
	cur, err := a.getDoc(ctx, a.db, id)
	if err != nil {
		return Document{}, err
	}
	now := a.now().Truncate(time.Millisecond)
	var saved Document
	write := func(ctx context.Context, tx *sql.Tx) error {
		d, err := a.lockDoc(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := a.evaluate(ctx, tx, d, user, in.Expect, in.Token, in.Cond); err != nil {
			return err
		}
		if in.Title != nil {
			d.Title = *in.Title
		}
		if in.Body != nil {
			d.Body = *in.Body
		}
		if err := validText(d.Title, d.Body); err != nil {
			return err
		}
		at := nextModified(d.UpdatedAt, now)
		if err := a.writeDoc(ctx, tx, d, in.Unmodified, user, at); err != nil {
			return err
		}
		d.Version, d.UpdatedBy, d.UpdatedAt = d.Version+1, user, at
		saved = d
		return nil
	}
	if err := a.underPolicy(ctx, cur.Policy, user, id, in.Token, write); err != nil {
		return Document{}, err
	}
	a.changed()
	return saved, nil
}

// underPolicy runs fn in a transaction: for a pessimistic document, the
// one that verifies the caller's checkout.
func (a *App) underPolicy(ctx context.Context, policy, user, id, token string, fn func(ctx context.Context, tx *sql.Tx) error) error {
	if policy != Pessimistic {
		return sqlcc.RunTx(ctx, a.db, sqlcc.TxOptions{}, fn)
	}
	if token == "" {
		if err := a.lockedBy(ctx, id, user); err != nil {
			return err
		}
		return errCheckoutRequired
	}
	err := a.co.Save(ctx, id, token, fn)
	if err != nil && isCheckoutLost(err) {
		if lerr := a.lockedBy(ctx, id, user); lerr != nil {
			return lerr
		}
		return &checkoutError{err}
	}
	return err
}

// evaluate checks, in the write's transaction, what a save or delete of
// the locked document d depends on: that a checkout token is the caller's
// own, the version the editor started from, and the request's
// preconditions.
func (a *App) evaluate(ctx context.Context, tx *sql.Tx, d Document, user string, expect int64, token string, cond func(Document) error) error {
	if d.Policy == Pessimistic && token != "" {
		owner, ok, err := a.tokenOwner(ctx, tx, d.ID, token)
		if err != nil {
			return err
		}
		if ok && owner != user {
			// Someone else's token: the checkout is his, not the caller's.
			return &httpcc.LockedError{Holder: owner}
		}
	}
	if expect > 0 && d.Version != expect {
		return &conflictError{Current: d}
	}
	if cond != nil {
		return cond(d)
	}
	return nil
}

// tokenOwner returns the owner of the checkout of document id that token
// holds, if there is one. A token belongs to one owner for its whole life.
func (a *App) tokenOwner(ctx context.Context, db sqlcc.DB, id, token string) (string, bool, error) {
	var owner string
	err := db.QueryRowContext(ctx, a.q(`SELECT owner FROM `+tCheckouts+` WHERE resource = ? AND token = ?`), id, token).Scan(&owner)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("webapp: read checkout: %w", err)
	}
	return owner, true, nil
}

// lockDoc reads the document id and locks its row until tx ends.
func (a *App) lockDoc(ctx context.Context, tx *sql.Tx, id string) (Document, error) {
	d := Document{ID: id}
	var at int64
	err := sqlcc.LockRow(ctx, tx, sqlcc.Table{Dialect: a.dialect, Name: tDocs}, id, sqlcc.LockOptions{},
		[]string{"title", "body", "policy", "version", "stamp", "updated_by", "updated_at"},
		&d.Title, &d.Body, &d.Policy, &d.Version, &d.stamp, &d.UpdatedBy, &at)
	if errors.Is(err, sqlcc.ErrNotFound) {
		return Document{}, errNotFound
	}
	if err != nil {
		return Document{}, fmt.Errorf("webapp: read document: %w", err)
	}
	d.UpdatedAt = sinceMilli(at)
	return d, nil
}

// unmodifiedCond returns the SQL condition, and its argument, that holds
// when the row's updated_at is not later than the HTTP-date unmodified at
// one-second granularity; "" when unmodified is zero.
func unmodifiedCond(unmodified time.Time) (string, []any) {
	if unmodified.IsZero() {
		return "", nil
	}
	return ` AND updated_at < ?`, []any{unmodified.Truncate(time.Second).Add(time.Second).UnixMilli()}
}

// writeDoc updates the locked row of d, conditional on d's version and on
// unmodified, in the same statement, recording the change at time at. A
// row that no longer matches is a *conflictError (it cannot happen while
// the row lock holds).
func (a *App) writeDoc(ctx context.Context, tx *sql.Tx, d Document, unmodified time.Time, user string, at time.Time) error {
	cond, args := unmodifiedCond(unmodified)
	res, err := tx.ExecContext(ctx, a.q(`UPDATE `+tDocs+` SET title = ?, body = ?, updated_by = ?, updated_at = ?, version = version + 1 WHERE id = ? AND version = ?`+cond),
		append([]any{d.Title, d.Body, user, at.UnixMilli(), d.ID, d.Version}, args...)...)
	if err != nil {
		return fmt.Errorf("webapp: update document: %w", err)
	}
	return a.matched(ctx, tx, res, d.ID)
}

// matched turns an UPDATE or DELETE that matched no row into the error
// that says why: errNotFound or a *conflictError with the document now.
func (a *App) matched(ctx context.Context, tx *sql.Tx, res sql.Result, id string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("webapp: write document: %w", err)
	}
	if n == 1 {
		return nil
	}
	now, err := a.getDoc(ctx, tx, id)
	if err != nil {
		return err
	}
	return &conflictError{Current: now}
}

// deleteInput is one delete of a document.
type deleteInput struct {
	Token      string               // the checkout token; required for pessimistic documents
	Cond       func(Document) error // as in saveInput
	Unmodified time.Time            // as in saveInput
}

// deleteDoc deletes a document when in.Cond holds for it (under the
// checkout for a pessimistic one), in the same way as saveDoc: row locked,
// preconditions evaluated against it, DELETE conditional on its version.
func (a *App) deleteDoc(ctx context.Context, user, id string, in deleteInput) error {
	cur, err := a.getDoc(ctx, a.db, id)
	if err != nil {
		return err
	}
	del := func(ctx context.Context, tx *sql.Tx) error {
		d, err := a.lockDoc(ctx, tx, id)
		if err != nil {
			return err
		}
		if err := a.evaluate(ctx, tx, d, user, 0, in.Token, in.Cond); err != nil {
			return err
		}
		cond, args := unmodifiedCond(in.Unmodified)
		res, err := tx.ExecContext(ctx, a.q(`DELETE FROM `+tDocs+` WHERE id = ? AND version = ?`+cond), append([]any{id, d.Version}, args...)...)
		if err != nil {
			return fmt.Errorf("webapp: delete document: %w", err)
		}
		return a.matched(ctx, tx, res, id)
	}
	if err := a.underPolicy(ctx, cur.Policy, user, id, in.Token, del); err != nil {
		return err
	}
	if cur.Policy == Pessimistic {
		_ = a.co.Release(ctx, id, in.Token)
	}
	a.changed()
	return nil
}

func isCheckoutLost(err error) bool {
	return errors.Is(err, checkout.ErrExpired) || errors.Is(err, checkout.ErrBroken) || errors.Is(err, checkout.ErrNotHeld)
}

// lockedBy returns a *httpcc.LockedError when someone other than user holds
// the document's checkout, and nil otherwise.
func (a *App) lockedBy(ctx context.Context, id, user string) error {
	c, ok, err := a.co.Get(ctx, id)
	if err != nil {
		return err
	}
	if ok && c.Owner != user {
		return &httpcc.LockedError{Holder: c.Owner, Since: c.Since, Until: c.Until}
	}
	return nil
}

// bump marks a document changed for the live-update poller, after a
// checkout was taken, released or broken.
func (a *App) bump(ctx context.Context, id string) {
	_, err := a.db.ExecContext(ctx, a.q(`UPDATE `+tDocs+` SET stamp = stamp + 1 WHERE id = ?`), id)
	if err != nil {
		a.log.Warn("mark document changed", "doc", id, "err", err)
	}
	a.changed()
}

// Users and sessions.

func (a *App) login(ctx context.Context, name, password string) (User, error) {
	var u User
	var hash string
	var admin int
	err := a.db.QueryRowContext(ctx, a.q(`SELECT name, display, password_hash, admin FROM `+tUsers+` WHERE name = ?`), name).
		Scan(&u.Name, &u.Display, &hash, &admin)
	if errors.Is(err, sql.ErrNoRows) {
		// Spend the same time as a wrong password, so timing does not tell
		// which names exist.
		_ = bcrypt.CompareHashAndPassword(a.dummyHash, []byte(password))
		return User{}, errBadLogin
	}
	if err != nil {
		return User{}, fmt.Errorf("webapp: read user: %w", err)
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) != nil {
		return User{}, errBadLogin
	}
	u.Admin = admin != 0
	return u, nil
}

var errBadLogin = errors.New("webapp: wrong name or password")

func (a *App) userByToken(ctx context.Context, token string) (User, bool, error) {
	var u User
	var admin int
	err := a.db.QueryRowContext(ctx, a.q(`SELECT name, display, admin FROM `+tUsers+` WHERE token_hash = ?`), hashToken(token)).
		Scan(&u.Name, &u.Display, &admin)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, false, nil
	}
	if err != nil {
		return User{}, false, fmt.Errorf("webapp: read user: %w", err)
	}
	u.Admin = admin != 0
	return u, true, nil
}

// session is a signed-in browser session.
type session struct {
	User User
	CSRF string
}

func randomToken() string { return rand.Text() }

func (a *App) newSession(ctx context.Context, user string) (id string, err error) {
	id = randomToken()
	exp := a.now().Add(a.opts.SessionTTL).UnixMilli()
	_, err = a.db.ExecContext(ctx, a.q(`INSERT INTO `+tSessions+` (id_hash, user_name, csrf, expires) VALUES (?, ?, ?, ?)`),
		hashToken(id), user, randomToken(), exp)
	if err != nil {
		return "", fmt.Errorf("webapp: create session: %w", err)
	}
	return id, nil
}

func (a *App) getSession(ctx context.Context, id string) (session, bool, error) {
	var s session
	var admin int
	var exp int64
	err := a.db.QueryRowContext(ctx, a.q(`SELECT u.name, u.display, u.admin, s.csrf, s.expires FROM `+tSessions+` s JOIN `+tUsers+` u ON u.name = s.user_name WHERE s.id_hash = ?`), hashToken(id)).
		Scan(&s.User.Name, &s.User.Display, &admin, &s.CSRF, &exp)
	if errors.Is(err, sql.ErrNoRows) {
		return session{}, false, nil
	}
	if err != nil {
		return session{}, false, fmt.Errorf("webapp: read session: %w", err)
	}
	if a.now().UnixMilli() >= exp {
		return session{}, false, nil
	}
	s.User.Admin = admin != 0
	return s, true, nil
}

func (a *App) deleteSession(ctx context.Context, id string) error {
	_, err := a.db.ExecContext(ctx, a.q(`DELETE FROM `+tSessions+` WHERE id_hash = ? OR expires < ?`), hashToken(id), a.now().UnixMilli())
	return err
}

func equalSecret(a, b string) bool {
	return len(a) > 0 && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
