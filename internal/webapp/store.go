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

func (d Document) state() httpcc.State {
	return httpcc.State{ETag: d.ETag(), Exists: true}
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
}

// saveDoc saves a document under its policy:
//
//   - last-write-wins: an unconditional update, unless Expect is set;
//   - optimistic: an update conditional on Expect (the caller enforces that
//     it is set), a *conflictError when the version moved;
//   - pessimistic: the update runs in the transaction that verifies the
//     caller's checkout (checkout.Manager.Save), so a save under an expired
//     or broken checkout changes nothing.
//
// Every accepted save raises the version by exactly one.
func (a *App) saveDoc(ctx context.Context, user, id string, in saveInput) (Document, error) {
	cur, err := a.getDoc(ctx, a.db, id)
	if err != nil {
		return Document{}, err
	}
	title, body := cur.Title, cur.Body
	if in.Title != nil {
		title = *in.Title
	}
	if in.Body != nil {
		body = *in.Body
	}
	if err := validText(title, body); err != nil {
		return Document{}, err
	}
	now := a.now().Truncate(time.Millisecond)
	var saved int64
	write := func(ctx context.Context, tx *sql.Tx) error {
		v, err := a.writeDoc(ctx, tx, id, in.Expect, title, body, user, now)
		saved = v
		return err
	}
	switch cur.Policy {
	case Pessimistic:
		if in.Token == "" {
			if err := a.lockedBy(ctx, id, user); err != nil {
				return Document{}, err
			}
			return Document{}, errCheckoutRequired
		}
		err = a.co.Save(ctx, id, in.Token, write)
		if err != nil && isCheckoutLost(err) {
			if lerr := a.lockedBy(ctx, id, user); lerr != nil {
				return Document{}, lerr
			}
			return Document{}, &checkoutError{err}
		}
	default:
		err = sqlcc.RunTx(ctx, a.db, sqlcc.TxOptions{}, write)
	}
	var ce *sqlcc.ConflictError
	if errors.As(err, &ce) {
		if ce.Gone {
			return Document{}, errNotFound
		}
		now, gerr := a.getDoc(ctx, a.db, id)
		if gerr != nil {
			return Document{}, gerr
		}
		return Document{}, &conflictError{Current: now}
	}
	if err != nil {
		return Document{}, err
	}
	a.changed()
	cur.Title, cur.Body, cur.Version, cur.UpdatedBy, cur.UpdatedAt = title, body, saved, user, now
	return cur, nil
}

// writeDoc updates the row in tx and returns the new version. With expect
// 0 the update is unconditional; the row lock the UPDATE takes keeps the
// version read back in the same transaction ours.
func (a *App) writeDoc(ctx context.Context, tx *sql.Tx, id string, expect int64, title, body, user string, now time.Time) (int64, error) {
	set := []sqlcc.Assignment{sqlcc.Set("title", title), sqlcc.Set("body", body), sqlcc.Set("updated_by", user), sqlcc.Set("updated_at", now.UnixMilli())}
	if expect > 0 {
		return sqlcc.UpdateVersioned(ctx, tx, sqlcc.Table{Dialect: a.dialect, Name: tDocs}, id, expect, set...)
	}
	res, err := tx.ExecContext(ctx, a.q(`UPDATE `+tDocs+` SET title = ?, body = ?, updated_by = ?, updated_at = ?, version = version + 1 WHERE id = ?`),
		title, body, user, now.UnixMilli(), id)
	if err != nil {
		return 0, fmt.Errorf("webapp: update document: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return 0, fmt.Errorf("webapp: update document: %w", err)
	} else if n == 0 {
		return 0, errNotFound
	}
	var v int64
	if err := tx.QueryRowContext(ctx, a.q(`SELECT version FROM `+tDocs+` WHERE id = ?`), id).Scan(&v); err != nil {
		return 0, fmt.Errorf("webapp: read version: %w", err)
	}
	return v, nil
}

// deleteDoc deletes a document at version expect (under the checkout for a
// pessimistic one).
func (a *App) deleteDoc(ctx context.Context, user, id string, expect int64, token string) error {
	cur, err := a.getDoc(ctx, a.db, id)
	if err != nil {
		return err
	}
	del := func(ctx context.Context, tx *sql.Tx) error {
		return sqlcc.DeleteVersioned(ctx, tx, sqlcc.Table{Dialect: a.dialect, Name: tDocs}, id, expect)
	}
	if cur.Policy == Pessimistic {
		if token == "" {
			if err := a.lockedBy(ctx, id, user); err != nil {
				return err
			}
			return errCheckoutRequired
		}
		err = a.co.Save(ctx, id, token, del)
		if err != nil && isCheckoutLost(err) {
			if lerr := a.lockedBy(ctx, id, user); lerr != nil {
				return lerr
			}
			return &checkoutError{err}
		}
		if err == nil {
			_ = a.co.Release(ctx, id, token)
		}
	} else {
		err = sqlcc.RunTx(ctx, a.db, sqlcc.TxOptions{}, del)
	}
	var ce *sqlcc.ConflictError
	if errors.As(err, &ce) {
		if ce.Gone {
			return errNotFound
		}
		now, gerr := a.getDoc(ctx, a.db, id)
		if gerr != nil {
			return gerr
		}
		return &conflictError{Current: now}
	}
	if err == nil {
		a.changed()
	}
	return err
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
