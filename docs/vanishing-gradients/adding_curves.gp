# Learning curves of the adding problem (test MSE against step); gnuplot adding_curves.gp.
set datafile separator ','
set terminal pngcairo size 1300,520 font 'sans,10'
set output 'adding_curves.png'
set logscale y
set grid
set xlabel 'training step (batch 50)'
set ylabel 'test MSE'
set key top right
set multiplot layout 1,2 title 'Adding problem, hidden 128, RMSprop lr 1e-3, clip 1'
# T = 100: the longer LSTM/GRU runs when present (same seed and flags, so they extend the short ones).
lstm100 = system('test -s adding_lstm_T100_long.csv && echo adding_lstm_T100_long.csv || echo adding_lstm_T100.csv')
gru100 = system('test -s adding_gru_T100_long.csv && echo adding_gru_T100_long.csv || echo adding_gru_T100.csv')
rnn100 = system('test -s adding_rnn_T100_long.csv && echo adding_rnn_T100_long.csv || echo adding_rnn_T100.csv')
set title 'T = 100'
plot 0.1667 with lines dt 2 lc rgb 'gray' title 'baseline 1/6', \
     0.01 with lines dt 3 lc rgb 'black' title 'solved (0.01)', \
     rnn100 using 6:8 with lines lw 2 lc rgb '#d62728' title 'tanh RNN', \
     lstm100 using 6:8 with lines lw 2 lc rgb '#2ca02c' title 'LSTM (forget bias 1)', \
     gru100 using 6:8 with lines lw 2 lc rgb '#9467bd' title 'GRU'
set title 'T = 200'
plot 0.1667 with lines dt 2 lc rgb 'gray' title 'baseline 1/6', \
     0.01 with lines dt 3 lc rgb 'black' title 'solved (0.01)', \
     'adding_rnn_T200.csv' using 6:8 with lines lw 2 lc rgb '#d62728' title 'tanh RNN', \
     'adding_lstm_T200.csv' using 6:8 with lines lw 2 lc rgb '#2ca02c' title 'LSTM (forget bias 1)', \
     'adding_gru_T200.csv' using 6:8 with lines lw 2 lc rgb '#9467bd' title 'GRU'
unset multiplot
