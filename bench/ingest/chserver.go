package main

import "github.com/bouncer-mail/bouncer/bench/internal/chserver"

// chServer is the tool's throwaway clickhouse-server (bench/internal/chserver).
type chServer struct{ *chserver.Server }

func startClickHouse(dir string) (*chServer, error) {
	s, err := chserver.Start(dir)
	if err != nil {
		return nil, err
	}
	return &chServer{s}, nil
}
