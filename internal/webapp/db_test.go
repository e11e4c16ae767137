package webapp

import (
	"testing"
	"time"
)

func TestMySQLConfig(t *testing.T) {
	tests := []struct {
		name, url            string
		addr, user, pass, db string
		parseTime            bool
		timeout              time.Duration
		params               map[string]string
	}{
		{name: "plain", url: "mysql://root@db/haita", addr: "db:3306", user: "root", db: "haita"},
		{name: "driver options", url: "mysql://u:p@127.0.0.1:3307/haita?parseTime=true&timeout=5s&multiStatements=false",
			addr: "127.0.0.1:3307", user: "u", pass: "p", db: "haita", parseTime: true, timeout: 5 * time.Second},
		{name: "system variable", url: "mysql://u@h:1/d?time_zone=%27%2B00:00%27", addr: "h:1", user: "u", db: "d",
			params: map[string]string{"time_zone": "'+00:00'"}},
		{name: "password with DSN syntax", url: "mysql://u:a%40b%2Fc%3Fd@h:1/d?loc=Europe/Berlin", addr: "h:1", user: "u", pass: "a@b/c?d", db: "d"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := mysqlConfig(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Net != "tcp" || cfg.Addr != tt.addr || cfg.User != tt.user || cfg.Passwd != tt.pass || cfg.DBName != tt.db {
				t.Errorf("got %s(%s) %q:%q / %q", cfg.Net, cfg.Addr, cfg.User, cfg.Passwd, cfg.DBName)
			}
			if cfg.ParseTime != tt.parseTime || (tt.timeout != 0 && cfg.Timeout != tt.timeout) {
				t.Errorf("parseTime %v timeout %v", cfg.ParseTime, cfg.Timeout)
			}
			if len(cfg.Params) != len(tt.params) {
				t.Errorf("system variables %v, want %v", cfg.Params, tt.params)
			}
			for k, v := range tt.params {
				if cfg.Params[k] != v {
					t.Errorf("system variable %s = %q, want %q", k, cfg.Params[k], v)
				}
			}
		})
	}
	for _, bad := range []string{"mysql://u@h:1", "mysql://u@h:1/", "mysql://u@h:1/d?parseTime=maybe"} {
		if _, err := mysqlConfig(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
