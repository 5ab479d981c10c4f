package e2e

import (
	"os"
	"os/exec"
	"strconv"
)

func itoa(i int) string { return strconv.Itoa(i) }

func execCombined(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
