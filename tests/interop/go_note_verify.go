// Opens a C2SP signed note with Go's golang.org/x/mod/sumdb/note for one verifier key and prints
// what note.Open reports, as JSON. Built by tests/interop/test_go_sumdb_note.py from Debian's
// golang-golang-x-mod-dev sources (GOPATH mode, offline).
//
// usage: go_note_verify VKEY NOTE_FILE   (exit 0 opened, 1 refused, 2 bad key or file)
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"golang.org/x/mod/sumdb/note"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go_note_verify VKEY NOTE_FILE")
		os.Exit(2)
	}
	verifier, err := note.NewVerifier(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	msg, err := os.ReadFile(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	signers := []string{}
	for _, sig := range n.Sigs {
		signers = append(signers, sig.Name)
	}
	unverified := []string{}
	for _, sig := range n.UnverifiedSigs {
		unverified = append(unverified, sig.Name)
	}
	out, _ := json.Marshal(map[string]any{"text": n.Text, "signers": signers, "unverified": unverified})
	fmt.Println(string(out))
}
