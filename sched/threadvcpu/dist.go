package threadvcpu

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Dist is a service-time distribution.
type Dist interface {
	// Sample draws one service time.
	Sample(r *rand.Rand) time.Duration
	// Mean is the distribution's mean.
	Mean() time.Duration
	// String formats it as ParseDist reads it.
	String() string
}

// Fixed is a constant service time.
type Fixed time.Duration

// Sample implements [Dist].
func (f Fixed) Sample(*rand.Rand) time.Duration { return time.Duration(f) }

// Mean implements [Dist].
func (f Fixed) Mean() time.Duration { return time.Duration(f) }

func (f Fixed) String() string { return "fixed:" + time.Duration(f).String() }

// Exponential service times with the given mean.
type Exponential time.Duration

// Sample implements [Dist].
func (e Exponential) Sample(r *rand.Rand) time.Duration {
	return time.Duration(r.ExpFloat64() * float64(e))
}

// Mean implements [Dist].
func (e Exponential) Mean() time.Duration { return time.Duration(e) }

func (e Exponential) String() string { return "exp:" + time.Duration(e).String() }

// Bimodal is Short with probability 1-PLong, Long with probability PLong.
type Bimodal struct {
	Short, Long time.Duration
	PLong       float64
}

// Sample implements [Dist].
func (b Bimodal) Sample(r *rand.Rand) time.Duration {
	if r.Float64() < b.PLong {
		return b.Long
	}
	return b.Short
}

// Mean implements [Dist].
func (b Bimodal) Mean() time.Duration {
	return time.Duration((1-b.PLong)*float64(b.Short) + b.PLong*float64(b.Long))
}

func (b Bimodal) String() string {
	return fmt.Sprintf("bimodal:%v,%v,%g", b.Short, b.Long, b.PLong)
}

// ParseDist reads "fixed:10us", "exp:10us" or "bimodal:5us,100us,0.1"
// (short, long, probability of long).
func ParseDist(s string) (Dist, error) {
	kind, arg, _ := strings.Cut(s, ":")
	bad := func(err error) (Dist, error) {
		return nil, fmt.Errorf("service time %q: %w (want fixed:10us, exp:10us or bimodal:5us,100us,0.1)", s, err)
	}
	switch kind {
	case "fixed", "exp":
		d, err := time.ParseDuration(arg)
		if err != nil || d <= 0 {
			return bad(fmt.Errorf("bad duration %q", arg))
		}
		if kind == "fixed" {
			return Fixed(d), nil
		}
		return Exponential(d), nil
	case "bimodal":
		f := strings.Split(arg, ",")
		if len(f) != 3 {
			return bad(fmt.Errorf("want three fields"))
		}
		a, err1 := time.ParseDuration(f[0])
		b, err2 := time.ParseDuration(f[1])
		p, err3 := strconv.ParseFloat(f[2], 64)
		if err1 != nil || err2 != nil || err3 != nil || a <= 0 || b <= 0 || p < 0 || p > 1 {
			return bad(fmt.Errorf("bad field"))
		}
		return Bimodal{Short: a, Long: b, PLong: p}, nil
	}
	return bad(fmt.Errorf("unknown kind %q", kind))
}
