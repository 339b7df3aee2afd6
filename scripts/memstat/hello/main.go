// Command hello is memstat's baseline: a Go hello world, built with the
// same Go and flags as colibri.
package main

import "fmt"

func main() { fmt.Println("hello") }
