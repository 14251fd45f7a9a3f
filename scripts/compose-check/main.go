// compose-check loads a Compose file with compose-go, the Compose specification's reference
// library: it validates the file against the specification's JSON schema, interpolates it and
// checks its consistency (every depends_on, volume and network names something defined). It then
// checks what the schema cannot, so that `docker compose up --wait` can succeed:
//   - a depends_on with condition service_healthy names a service with a health check;
//   - a service that publishes ports has a health check;
//   - every image is pinned to a tag other than latest;
//   - every build context has its Dockerfile, and every bind mount's source exists.
// It prints each service's command and environment as JSON lines on stdout, for
// scripts/compose-test.sh to check against the sagaflow binary, and exits 1 with each problem
// on stderr.
//
//	go run . FILE
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

type serviceLine struct {
	Name        string            `json:"name"`
	Image       string            `json:"image"`
	Entrypoint  []string          `json:"entrypoint"`
	Command     []string          `json:"command"`
	Environment map[string]string `json:"environment"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check FILE")
		os.Exit(2)
	}
	file, err := filepath.Abs(os.Args[1])
	if err != nil {
		fail(err)
	}
	options, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		// Every profile: services behind one (the cli tool) are checked too.
		cli.WithProfiles([]string{"*"}),
		// Only the file's own values: the checker's environment must not change the result.
		cli.WithEnv(nil),
	)
	if err != nil {
		fail(err)
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: not a valid Compose file: %v\n", file, err)
		os.Exit(1)
	}

	var problems []string
	names := project.ServiceNames()
	sort.Strings(names)
	for _, name := range names {
		s := project.Services[name]
		healthy := s.HealthCheck != nil && !s.HealthCheck.Disable && len(s.HealthCheck.Test) > 0
		for dep, d := range s.DependsOn {
			target := project.Services[dep]
			if d.Condition == types.ServiceConditionHealthy &&
				(target.HealthCheck == nil || target.HealthCheck.Disable || len(target.HealthCheck.Test) == 0) {
				problems = append(problems, fmt.Sprintf("service %q waits for %q to be healthy, but %q has no health check", name, dep, dep))
			}
		}
		if len(s.Ports) > 0 && !healthy {
			problems = append(problems, fmt.Sprintf("service %q publishes ports but has no health check", name))
		}
		if s.Image == "" {
			problems = append(problems, fmt.Sprintf("service %q names no image", name))
		} else if ref := s.Image[strings.LastIndex(s.Image, "/")+1:]; !strings.Contains(ref, ":") || strings.HasSuffix(ref, ":latest") {
			problems = append(problems, fmt.Sprintf("service %q: image %q is not pinned to a version tag", name, s.Image))
		}
		if s.Build != nil {
			dockerfile := s.Build.Dockerfile
			if dockerfile == "" {
				dockerfile = "Dockerfile"
			}
			if !filepath.IsAbs(dockerfile) {
				dockerfile = filepath.Join(s.Build.Context, dockerfile)
			}
			if _, err := os.Stat(dockerfile); err != nil {
				problems = append(problems, fmt.Sprintf("service %q: build file %s is missing", name, dockerfile))
			}
		}
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind {
				if _, err := os.Stat(v.Source); err != nil {
					problems = append(problems, fmt.Sprintf("service %q mounts %s, which is missing", name, v.Source))
				}
			}
		}
		env := map[string]string{}
		for k, v := range s.Environment {
			if v != nil {
				env[k] = *v
			} else {
				env[k] = ""
			}
		}
		line, _ := json.Marshal(serviceLine{name, s.Image, s.Entrypoint, s.Command, env})
		fmt.Println(string(line))
	}
	for _, p := range problems {
		fmt.Fprintf(os.Stderr, "%s: %s\n", file, p)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
