from sandcastle.agent.main import main

main()
