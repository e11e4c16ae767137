package sqlstore_test

import (
	"fmt"

	"github.com/haita/haita/internal/sqlstore"
	"github.com/haita/haita/sqlcc"
)

// A store checks its table name, and the names of the tables and indexes named after it,
// once, and quotes them for the dialect.
func ExampleNewTable() {
	t, err := sqlstore.NewTable(sqlcc.MySQL, "", "app_checkouts", "_ended")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(t.Quoted, t.Quote("_ended"))

	_, err = sqlstore.NewTable(sqlcc.Postgres, "app checkouts", "app_checkouts")
	fmt.Println(err)
	// Output:
	// `app_checkouts` `app_checkouts_ended`
	// table name "app checkouts": sqlcc: invalid identifier: "app checkouts"
}
