// Command ollama-modelfile checks a Modelfile with Ollama's own parser and renders its TEMPLATE
// with Ollama's own template package, so baton's export is tested against upstream, not a copy.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/parser"
	"github.com/ollama/ollama/template"
)

func main() {
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	modelfile, err := parser.ParseFile(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "parse:", err)
		os.Exit(1)
	}
	out := map[string]any{"commands": modelfile.Commands}
	var messages []api.Message
	if len(os.Args) > 2 {
		if err := json.Unmarshal([]byte(os.Args[2]), &messages); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	for _, command := range modelfile.Commands {
		if strings.ToLower(command.Name) != "template" {
			continue
		}
		tmpl, err := template.Parse(command.Args)
		if err != nil {
			fmt.Fprintln(os.Stderr, "template:", err)
			os.Exit(1)
		}
		var rendered strings.Builder
		if err := tmpl.Execute(&rendered, template.Values{Messages: messages}); err != nil {
			fmt.Fprintln(os.Stderr, "execute:", err)
			os.Exit(1)
		}
		out["rendered"] = rendered.String()
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
