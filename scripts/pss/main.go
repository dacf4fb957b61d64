// pss-check: the upstream Pod Security Standards evaluator (k8s.io/pod-security-admission, the code the
// PodSecurity admission plugin runs) applied to every pod template in Kubernetes manifests.
//
//	pss-check [-level restricted] [-version latest] [-json] manifests.yaml...
//
// Prints one line per refused pod template (-json: a JSON list of {kind, name, detail}) and exits 1 if any
// is refused.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

// the workload kinds whose pod templates the PodSecurity plugin also evaluates (it checks pod controllers too)
type object struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Template    *corev1.PodTemplateSpec `json:"template"`
		JobTemplate *struct {
			Spec struct {
				Template *corev1.PodTemplateSpec `json:"template"`
			} `json:"spec"`
		} `json:"jobTemplate"`
	} `json:"spec"`
}

func main() {
	levelFlag := flag.String("level", "restricted", "baseline or restricted")
	versionFlag := flag.String("version", "latest", "policy version, e.g. v1.33 or latest")
	jsonFlag := flag.Bool("json", false, "print the refusals as a JSON list")
	flag.Parse()
	level, err := api.ParseLevel(*levelFlag)
	check(err)
	version, err := api.ParseVersion(*versionFlag)
	check(err)
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks())
	check(err)
	type refusal struct {
		Kind   string `json:"kind"`
		Name   string `json:"name"`
		Detail string `json:"detail"`
	}
	refusals := []refusal{}
	checked := 0
	for _, path := range flag.Args() {
		data, err := os.ReadFile(path)
		check(err)
		reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := reader.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			check(err)
			var obj object
			check(yaml.Unmarshal(doc, &obj))
			template := obj.Spec.Template
			if obj.Kind == "CronJob" && obj.Spec.JobTemplate != nil {
				template = obj.Spec.JobTemplate.Spec.Template
			}
			if template == nil {
				continue
			}
			checked++
			lv := api.LevelVersion{Level: level, Version: version}
			result := policy.AggregateCheckResults(evaluator.EvaluatePod(lv, &template.ObjectMeta, &template.Spec))
			if !result.Allowed {
				refusals = append(refusals, refusal{obj.Kind, obj.Metadata.Name, result.ForbiddenDetail()})
				if !*jsonFlag {
					fmt.Printf("%s: %s/%s: violates PodSecurity %q: %s\n", path, obj.Kind, obj.Metadata.Name,
						lv.String(), result.ForbiddenDetail())
				}
			}
		}
	}
	if *jsonFlag {
		check(json.NewEncoder(os.Stdout).Encode(refusals))
	} else {
		fmt.Printf("pss-check: %d pod templates checked at %s:%s, %d refused\n", checked, level, version,
			len(refusals))
	}
	if len(refusals) > 0 {
		os.Exit(1)
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "pss-check:", err)
		os.Exit(2)
	}
}
