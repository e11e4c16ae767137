// Package mysqllock implements [lock.Locker] on MySQL and MariaDB lease rows.
//
// Each key is one row in an InnoDB lease table (see [Schema]).
package mysqllock
