package boot

import "strings"

// defaultArgs are the kernel arguments colibri adds to a command line.
//
// pci=noearly: Linux x86-64 looks for an AMD GART aperture when the CPU is
// an AMD family 0Fh, 10h or early 15h (amd_gart_present(), which is what
// QEMU's TCG CPUs and so the KVM sandbox's report), twice:
// early_gart_iommu_check() from setup_arch() and gart_iommu_hole_init()
// from mem_init(). Each runs search_agp_bridge(), which reads the class
// register of every device slot of all 256 PCI buses through the legacy
// configuration ports 0xcf8/0xcfc: ~8,400 reads, ~16,800 exits to the VMM,
// per search. Both searches, and the early PCI quirks (chipset workarounds
// for hardware a colibri VM does not have), stop when early_pci_allowed()
// is false, which pci=noearly makes it; the kernel then sets up the ECAM
// window from the ACPI MCFG table later, checked against the e820 map,
// where colibri reserves it.
var defaultArgs = []string{"pci=noearly"}

// listParams are parameters that take a comma-separated list of options
// and may be given more than once (the kernel parses each occurrence): a
// default option of theirs is added unless the command line already lists
// that option.
var listParams = map[string]bool{"pci": true}

// DefaultArgs returns cmdline with colibri's default kernel arguments
// added, as Firecracker adds its own: each one unless the command line
// already sets that parameter (for a list parameter such as pci=, unless
// it already lists that option). They go before a " -- " that starts the
// arguments for init. A command line with an unclosed quote, after which
// anything added would become part of a quoted value, is returned as it is.
func DefaultArgs(cmdline string) string {
	kernel, rest := splitInitArgs(cmdline)
	if strings.Count(kernel, `"`)%2 != 0 {
		return cmdline
	}
	words := cmdlineWords(kernel)
	var add []string
	for _, d := range defaultArgs {
		if !cmdlineSets(words, d) {
			add = append(add, d)
		}
	}
	if len(add) == 0 {
		return cmdline
	}
	out := strings.TrimRight(kernel, " \t\n")
	if out != "" {
		out += " "
	}
	out += strings.Join(add, " ")
	if rest != "" {
		out += " " + rest
	}
	return out
}

// splitInitArgs splits a command line at the first "--" word (outside
// quotes): what follows it is for init, not the kernel. rest keeps the
// "--".
func splitInitArgs(cmdline string) (kernel, rest string) {
	inQuote := false
	for i := 0; i < len(cmdline); i++ {
		switch c := cmdline[i]; {
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '-' && strings.HasPrefix(cmdline[i:], "--") &&
			(i == 0 || isSpace(cmdline[i-1])) && (i+2 == len(cmdline) || isSpace(cmdline[i+2])):
			return cmdline[:i], cmdline[i:]
		}
	}
	return cmdline, ""
}

// cmdlineWords splits a kernel command line into its parameters the way
// the kernel does: at white space outside double quotes.
func cmdlineWords(s string) []string {
	var words []string
	inQuote := false
	start := -1
	for i := 0; i <= len(s); i++ {
		end := i == len(s)
		if !end && s[i] == '"' {
			inQuote = !inQuote
		}
		if end || (!inQuote && isSpace(s[i])) {
			if start >= 0 {
				words = append(words, s[start:i])
				start = -1
			}
			continue
		}
		if start < 0 {
			start = i
		}
	}
	return words
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' }

// paramName returns a parameter's name, the kernel's way: up to the first
// '=', with '-' and '_' the same.
func paramName(word string) (name, value string, hasValue bool) {
	name, value, hasValue = strings.Cut(word, "=")
	return strings.ReplaceAll(name, "-", "_"), strings.Trim(value, `"`), hasValue
}

// cmdlineSets reports whether words already set what the default argument
// def sets.
func cmdlineSets(words []string, def string) bool {
	dname, dval, _ := paramName(def)
	for _, w := range words {
		name, val, _ := paramName(w)
		if name != dname {
			continue
		}
		if !listParams[dname] {
			return true
		}
		for _, opt := range strings.Split(val, ",") {
			if opt == dval {
				return true
			}
		}
	}
	return false
}
