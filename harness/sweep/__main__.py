from harness.sweep.cli import main

main()
