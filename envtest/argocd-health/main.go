// Command argocd-health runs an Argo CD resource health script the way Argo CD
// runs a custom one (util/lua in Argo CD): gopher-lua (Lua 5.1) with only the
// libraries it opens without useOpenLibs (package, base, table and a "safe" os:
// no string, no math), a one-second budget, the object as the global obj, and
// an invalid status turned into Unknown.
//
//	argocd-health SCRIPT < objects.json  ->  [{"status": "...", "message": "..."}, ...]
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
)

// version is set at build time to a digest of this module's files.
var version = "dev"

type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Println("argocd-health", version)
		return
	}
	if len(os.Args) != 2 {
		fail("usage: argocd-health SCRIPT < objects.json")
	}
	script, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("%v", err)
	}
	var objects []map[string]any
	decoder := json.NewDecoder(os.Stdin)
	decoder.UseNumber()
	if err := decoder.Decode(&objects); err != nil {
		fail("reading objects: %v", err)
	}
	out := make([]health, 0, len(objects))
	for _, obj := range objects {
		out = append(out, run(string(script), obj))
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fail("%v", err)
	}
}

func run(script string, obj map[string]any) health {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs}} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		l.Call(1, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return health{Error: err.Error()}
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return health{Error: "the script did not return a table"}
	}
	status := lua.LVAsString(table.RawGetString("status"))
	if !validStatus[status] { // what Argo CD makes of any other value
		return health{Status: "Unknown", Message: "Lua returned an invalid health status"}
	}
	return health{Status: status, Message: lua.LVAsString(table.RawGetString("message"))}
}

var validStatus = map[string]bool{"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true,
	"Missing": true, "Unknown": true}

// openSafeOs stands for the part of the os library Argo CD allows (time and date;
// date here ignores a format argument).
func openSafeOs(l *lua.LState) int {
	mod := l.RegisterModule(lua.OsLibName, map[string]lua.LGFunction{
		"time": func(l *lua.LState) int { l.Push(lua.LNumber(time.Now().Unix())); return 1 },
		"date": func(l *lua.LState) int { l.Push(lua.LString(time.Now().UTC().Format(time.RFC3339))); return 1 },
	})
	l.Push(mod)
	return 1
}

func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case map[string]any:
		table := l.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(l, item))
		}
		return table
	case []any:
		table := l.NewTable()
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	case json.Number:
		f, _ := v.Float64()
		return lua.LNumber(f)
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	default:
		return lua.LNil
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "argocd-health: "+format+"\n", args...)
	os.Exit(2)
}
