from reports.report import main

main()
