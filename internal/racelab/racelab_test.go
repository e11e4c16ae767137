package racelab_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/haita/haita/internal/racelab"
	"github.com/haita/haita/internal/testserver"
)

// workerEnv marks a re-executed test binary as a race-lab worker process.
const workerEnv = "HAITA_RACELAB_TEST_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		if err := racelab.RunWorker(context.Background(), os.Args[1:], os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	testserver.Main(m)
}

// worker re-executes the test binary as a worker process.
func worker(ctx context.Context, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), workerEnv+"=1")
	return cmd
}

// check runs cfg and asserts every broken variant violated its invariant
// and every fixed variant kept it, on every case, with no errors.
func check(t *testing.T, cfg racelab.Config) []racelab.Result {
	t.Helper()
	cfg.Worker = worker
	cfg.Dir = t.TempDir()
	plan, err := racelab.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) == 0 {
		t.Fatal("no cases planned")
	}
	results, err := racelab.Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(plan) {
		t.Fatalf("%d results for %d planned cases", len(results), len(plan))
	}
	for _, r := range results {
		name := strings.Join([]string{r.Scenario, r.Variant, r.Engine}, "/")
		if r.Sweep {
			name += "/sweep"
		}
		switch {
		case r.Error != "":
			t.Errorf("%s: error: %s", name, r.Error)
		case r.Kind == racelab.Broken && r.Violations == 0:
			t.Errorf("%s: broken variant kept its invariant: %s", name, r.Detail)
		case r.Kind == racelab.Fixed && r.Violations != 0:
			t.Errorf("%s: fixed variant had %d %s: %s", name, r.Violations, r.ViolationUnit, r.Detail)
		case r.Ops == 0:
			t.Errorf("%s: no operations completed", name)
		default:
			t.Logf("%s %s: %d %s (%d ops in %.0fms)", r.Kind, name, r.Violations, r.ViolationUnit, r.Ops, r.DurationMs)
		}
	}
	return results
}

// TestEmbedded runs every scenario on the embedded engines (goroutines and
// processes, memory, file, memlock, filelock, SQLite), renders the report and
// checks it in Chromium.
func TestEmbedded(t *testing.T) {
	cfg := racelab.Config{Sweep: []int{1, 4, 16}}
	results := check(t, cfg)
	ids := map[int]bool{}
	var processes, broken, fixed int
	for _, r := range results {
		ids[r.ScenarioID] = true
		if r.Mode == "processes" {
			processes++
		}
		if r.Kind == racelab.Broken {
			broken++
		} else {
			fixed++
		}
	}
	if want := len(racelab.Scenarios()); len(ids) != want {
		t.Errorf("scenarios run: %v, want all %d", ids, want)
	}
	if processes < 4 || broken < 10 || fixed < 20 {
		t.Errorf("%d process cases, %d broken, %d fixed: fewer than expected", processes, broken, fixed)
	}
	checkReport(t, results)
}

// TestRetriedPost runs the retried-POST scenario on the three databases.
func TestRetriedPost(t *testing.T) {
	check(t, racelab.Config{
		Scenarios: []string{"retried-post"},
		Engines:   []string{racelab.SQLite, racelab.Postgres, racelab.MySQL},
		Postgres:  testserver.Postgres(t),
		MySQL:     testserver.MariaDB(t),
	})
}

// TestPostgres runs every scenario that covers PostgreSQL (SQL scenarios,
// pglock across processes, pglock leases paused past their TTL).
func TestPostgres(t *testing.T) {
	check(t, racelab.Config{Engines: []string{racelab.Postgres}, Postgres: testserver.Postgres(t)})
}

// TestMariaDB runs every scenario that covers MySQL/MariaDB (SQL scenarios,
// mysqllock across processes, the cron job on a mysqllock lease, mysqllock
// leases paused past their TTL).
func TestMariaDB(t *testing.T) {
	check(t, racelab.Config{Engines: []string{racelab.MySQL}, MySQL: testserver.MariaDB(t)})
}

// TestRedis runs the Redis lock across processes, the deadlock on Redis
// locks, the cron job on a redislock lease and the paused holder on Redis
// and Redlock.
func TestRedis(t *testing.T) {
	single := testserver.Redis(t, testserver.RedisOptions{})
	var quorum []string
	for range 3 {
		quorum = append(quorum, testserver.Redis(t, testserver.RedisOptions{}).Addr())
	}
	check(t, racelab.Config{Engines: []string{racelab.Redis, racelab.Redlock}, Redis: single.Addr(), Redlock: quorum})
}

// TestEtcd runs the etcd lock across processes, the cron job on an
// etcdlock lease and the paused holder on an etcd lease.
func TestEtcd(t *testing.T) {
	check(t, racelab.Config{Engines: []string{racelab.Etcd}, Etcd: testserver.Etcd(t, 1).Endpoints()})
}

func TestConfigValidate(t *testing.T) {
	for name, cfg := range map[string]racelab.Config{
		"negative workers": {Workers: -1},
		"unknown engine":   {Engines: []string{"oracle"}},
		"unknown scenario": {Scenarios: []string{"42"}},
		"one redlock":      {Redlock: []string{"127.0.0.1:1"}},
		"zero sweep":       {Sweep: []int{0}},
	} {
		t.Run(name, func(t *testing.T) {
			if err := cfg.Validate(); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestPlanSelects(t *testing.T) {
	plan, err := racelab.Plan(racelab.Config{Scenarios: []string{"3", "create"}, Variants: []string{"broken"}, Engines: []string{racelab.SQLite}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range plan {
		got = append(got, c.String())
	}
	want := []string{
		"3 db-counter / read-modify-write on sqlite",
		"4 create / check-then-insert on sqlite",
		"4 create / check-then-insert + unique key on sqlite",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Without a way to start processes, process cases are left out.
	plan, err = racelab.Plan(racelab.Config{Scenarios: []string{"9"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan) != 0 {
		t.Fatalf("process cases planned without Worker: %v", plan)
	}
}
